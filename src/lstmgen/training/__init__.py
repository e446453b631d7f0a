"""The PyTorch trainer, in pieces (import them from their modules; this package imports nothing,
so the torch-free ``schedule`` serves the NumPy reference trainer without loading torch)::

    trainer.py   Trainer and Callback: create / resume, the step loop, evaluation, best model
    schedule.py  Position, warmup + cosine learning rate, stopping rules (torch-free)
    optim.py     the optimizer's parameter groups, AdamW, gradient clipping
    state.py     the trainer state's tensors and metadata: what is saved and how it comes back
    windows.py   TBPTT windows on the training device (``data.get_window`` slices them)

``lstmgen.train`` re-exports the public names for older imports.
"""
