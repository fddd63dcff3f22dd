"""sdcore: the training and analysis core of sdlab (never imports streamlit)."""
__version__ = "0.1.0"
