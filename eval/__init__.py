"""hoi_mllm.eval"""
