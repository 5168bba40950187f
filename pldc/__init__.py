"""pldc: the Prompt-Level Distillation compiler.

A ``.pld`` file declares a classification task, typed features and ordered decision rules;
pldc checks it, formats it and compiles it into a system prompt for a small student model,
then scores that student on labelled data.
"""

__version__ = "0.1.0"
