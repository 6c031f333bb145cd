"""medfuse.notes"""
