"""Research protocols as functions: the paper's experiments, each one command.

- :mod:`~faceage.experiments.split`: seeded, subject-exclusive train/val/test splits
- :mod:`~faceage.experiments.ablation`: the paper's variant grid x N seeds (Figs. 11, 12)
- :mod:`~faceage.experiments.lopo`: leave-one-person-out (FG-NET's 82 folds), with fine-tuning
- :mod:`~faceage.experiments.compare`: several models on one test set
- :mod:`~faceage.experiments.report`: Markdown + JSON + PNG reports with provenance
"""
