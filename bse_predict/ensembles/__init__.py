"""Ensembles: how members' probabilities combine, one ONNX graph for a whole ensemble, member-by-member serving."""
