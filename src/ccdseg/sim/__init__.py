"""Physics simulation with exact labels: configs, events, artefacts, pasted events, truth files."""
