"""The fourth stage: check real photos with a trained model (batch and watched folder), the report
a person reads, and evaluation on a labelled set."""
