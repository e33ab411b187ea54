"""Data minimisation for training datasets: census of personal data and pseudonymisation.

Built on the shared detection engine (``secureai.pii``) and the envelope format
(``secureai.crypto``); plaintext of encrypted files exists only in memory.
"""
