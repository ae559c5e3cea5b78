"""hoi_mllm.finetune"""
