"""TALLRec: Yes/No instructions from liked and disliked histories, K-shot samples, AUC, report."""
