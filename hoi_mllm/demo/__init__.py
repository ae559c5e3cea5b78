"""``hoi-mllm demo``: the whole system offline on the synthetic world, end to end, with a report.

::

    result = run_demo(demo_config("quick"), "out/demo")       # world, YOLO, fine-tuning, evaluation, report
    print(format_table(result.summary)); result.report_md

Modules: :mod:`.config` (the presets), :mod:`.stages` (records, skipping, resuming, disk space),
:mod:`.yolo_training` (the world as a YOLO dataset; training), :mod:`.run` (the five stages),
:mod:`.gallery`, :mod:`.summary` and :mod:`.report` (the report), :mod:`.check` (CI's check).
"""
from hoi_mllm.demo.config import FULL, PRESETS, QUICK, DemoConfig, demo_config
from hoi_mllm.demo.report import format_table, write_report
from hoi_mllm.demo.run import STAGES, DemoResult, run_demo
from hoi_mllm.demo.stages import DiskSpaceError, StageBook, StageRecord, check_disk_space

__all__ = ["FULL", "PRESETS", "QUICK", "STAGES", "DemoConfig", "DemoResult", "DiskSpaceError", "StageBook",
           "StageRecord", "check_disk_space", "demo_config", "format_table", "run_demo", "write_report"]
