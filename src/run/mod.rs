//! Run: jobs as processes. `exec` spawns and watches each job's supervisor and records its
//! end with its completion event; `supervisor` is that per-job process; `jobs` ids, outcomes,
//! text and tails; `controls` the buttons under a job's messages; `job_env` what a job gets;
//! `retention`
//! forgets finished work (and old dedupe records) once nothing of it is owed.

pub mod controls;
pub mod exec;
pub mod job_env;
pub mod jobs;
pub mod retention;
pub mod supervisor;
