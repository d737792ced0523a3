import warnings

# fastai's layers module calls torch.jit.script when imported, which this torch flags as
# deprecated: a notice about fastai's internals that would open every run's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
