"""Local scoring that matches the official evaluation tools (VQA, GQA, NLVR2, retrieval)."""
