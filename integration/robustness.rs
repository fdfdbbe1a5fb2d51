//! drainit under floods and faults: slow clients, signal storms, hanging steps.
