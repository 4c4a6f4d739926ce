"""Evaluation: WAR/UAR, confusion matrices, predictions with their reasoning traces."""
