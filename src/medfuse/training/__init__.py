"""medfuse.training"""
