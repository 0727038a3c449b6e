"""params.yaml and datasets.yaml as typed, strict models: a misspelled or unknown key is an error,
not a new key. One module a section (core: what they share; schema: all of them together)."""
