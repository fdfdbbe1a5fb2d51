//! Hostile input: property tests of config, signal, duration and HTTP path parsing.
