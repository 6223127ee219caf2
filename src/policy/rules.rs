//! Prometheus alerting rules from the policy (written in a later step).
