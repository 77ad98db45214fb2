"""The embedded Trainer: FfDL's Trainer API over local processes."""
