"""Training foundations shared by the Train tab's trainers (textual-inversion embeddings,
hypernetworks, LoRA) and by ``tools/train_default_model.py``: A1111's learning-rate schedule syntax,
prompt templates, the image dataset and its reproducible batch iterator, the diffusion loss, and the
log directory laid out as A1111 lays it out."""
