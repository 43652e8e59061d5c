"""Jobs and schedules: YAML specs by kind, Ray Jobs API submission, a local head, recurring runs.

    specs.py      kind → (pydantic spec model, run function); parse_spec validates before anything runs
    runspec.py    `python -m pipelines.jobs.runspec SPEC.yaml --job-id ID`: what a Ray job runs
    submit.py     JobsClient (Ray Jobs API) and submit_spec (same job id in Ray and the catalog)
    head.py       a detached local Ray head, found again via $VIDCORPUS_HOME/ray-head.json
    records.py    job rows written from outside the job (pending, stopped, failed on start)
    logs.py       a job's files under ROOT/jobs/<id>/ and Ray's driver log
    schedules.py  schedules under ROOT/schedules/, due_slot (catch up once), the scheduler loop
"""
