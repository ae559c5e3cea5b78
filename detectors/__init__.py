"""hoi_mllm.detectors"""
