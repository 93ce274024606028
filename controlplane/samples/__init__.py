"""The control plane's side of the data loop: kept inputs filed beside their results, operator
feedback, labelled data sets and release evaluations (docs/data.md)."""
