"""Data tools: builtin verifiable task generators and the SFT mix builder."""
