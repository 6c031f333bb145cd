"""medfuse.fusion"""
