"""External data gridtap reads to decide: electricity prices (`gridtap.inputs.prices`)."""
