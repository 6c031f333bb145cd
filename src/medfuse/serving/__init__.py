"""medfuse.serving"""
