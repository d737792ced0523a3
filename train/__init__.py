"""Training: the detector and its second look as fastai learners, on a CUDA GPU when there is one."""
