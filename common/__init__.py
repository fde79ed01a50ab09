"""Code that two or more of the models share. Importing it changes nothing in the process: the
entry points call common.runtime.configure_process() for the XLA:CPU and malloc tuning."""
