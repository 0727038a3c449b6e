"""RecSysLLM's recipe: entity-aware autoregressive blank infilling with 2D positions."""
