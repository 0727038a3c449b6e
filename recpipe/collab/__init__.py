"""Collaborative encoders: BPR-MF and SASRec, their early-stopped training, and the user and item
vectors they give TALLRec's yes/no samples (CoLLM/LLaRA-style collaborative tokens) and P5's baselines."""
