"""Model architectures: the registry keyed by ``ModelConfig.arch`` (registry.py), what each must
provide (base.py), and one module per architecture (recurrent.py: the LSTM/GRU/RNN stack)."""
