"""The two baselines, seq-lora and joint: one LoRA in PEFT layout per stage."""
