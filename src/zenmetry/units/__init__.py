"""Units of work: the unit processor, the running and finished figures of a unit, statement
shapes, call sites and memory."""
