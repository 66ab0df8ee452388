"""Models: training sets, training, evaluation reports."""
