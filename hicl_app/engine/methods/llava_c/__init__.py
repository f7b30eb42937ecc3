"""LLaVA-c: spectral-aware consolidation (`sac.py`), unsupervised inquiry regularization (`uir.py`)
and the projector's continual pretraining (`projector.py`), wired into the method interface by
`method.py`."""
