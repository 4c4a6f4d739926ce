"""Training stages: cold-start SFT and GRPO, plus what both share (checkpoints, schedules,
metrics logs)."""
