"""SIMLA's parts over the shared machinery (issue 17): the momentum teacher's update, feature
queues, distillation targets, sampled hard negatives, keyword pseudo-labels and visual
tokenizers. Each is a pure function or a small frozen module, tested on its own; the recipe's
objectives and train state are built from them.
"""
