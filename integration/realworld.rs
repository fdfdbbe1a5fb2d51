//! drainit in front of real software: HAProxy rolling termination, nginx.
