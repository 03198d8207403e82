"""Placeholder replaced by the fine-tune widget (issue 4)."""
