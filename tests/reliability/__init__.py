"""Reliability across hosts: partitions, name-server loss, chaos and coordinator crashes."""
