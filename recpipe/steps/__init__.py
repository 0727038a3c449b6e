"""The pipeline's steps, one module each: the params sections it reads (its `StepParams`), and its
wiring (`run`). stages/<step>.py runs one under DVC (recpipe.steps.stage.main); the CLI runs them
with the whole params file. What they share is small: the standard paths (paths), how a stage
runs (stage), where fine-tuning starts (pretrained) and the model to score with (scoring)."""
