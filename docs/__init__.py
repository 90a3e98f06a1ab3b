"""The documentation shipped inside the package (diagnostics.md: rule help in SARIF output)."""
