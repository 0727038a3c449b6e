"""P5 task families: samples, training mixture, evaluation on seen and unseen templates, baselines, report."""
