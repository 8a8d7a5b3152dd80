"""Staged rollout of PostgreSQL migrations: the steps, as plain functions.

The Airflow DAG in ``dags/`` only wires these together; every module here is usable and
tested without Airflow.
"""
