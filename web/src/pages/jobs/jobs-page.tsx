// The jobs page: /jobs submits jobs and lists them live; /jobs/<id> shows one job and its stream.
import { useEffect, useState } from 'preact/hooks';
import { call } from '../../api.js';
import { mayUse, useCaller } from '../../caller.js';
import { JobDetail } from './job-detail.js';
import type { ListPipelinesResponse, PipelineSummary } from './job-types.js';
import { JobsList } from './jobs-list.js';
import { SubmitJobForm } from './submit-job-form.js';
import './jobs.css';

export function JobsPage({ path }: { path: string }) {
  const jobId = path.startsWith('/jobs/') ? decodeURIComponent(path.slice('/jobs/'.length).replace(/\/+$/, '')) : '';
  return jobId ? <JobDetail key={jobId} jobId={jobId} /> : <JobsOverview />;
}

function JobsOverview() {
  const { caller } = useCaller();
  const [pipelines, setPipelines] = useState<PipelineSummary[] | undefined>(undefined);
  const [pipelinesError, setPipelinesError] = useState<unknown>(undefined);
  // Bumped by a submission: the list asks again at once instead of at its next refresh.
  const [refreshSignal, setRefreshSignal] = useState(0);

  useEffect(() => {
    const controller = new AbortController();
    call<ListPipelinesResponse>('GET', '/v1/pipelines', undefined, { signal: controller.signal }).then(
      (answer) => setPipelines([...(answer.pipelines ?? [])].sort((a, b) => a.name.localeCompare(b.name))),
      (error: unknown) => {
        if (!controller.signal.aborted) setPipelinesError(error);
      },
    );
    return () => controller.abort();
  }, []);

  return (
    <>
      <h1>Jobs</h1>
      <p class="muted">
        {caller?.keysEnabled
          ? caller.admin
            ? `Every key's jobs (key ${caller.name ?? ''} is an admin).`
            : `The jobs of key ${caller.name ?? ''}.`
          : 'Durable runs: submitted jobs and chats, stored in NATS JetStream, newest first.'}
      </p>
      {caller === undefined || mayUse(caller, 'jobs') ? (
        <SubmitJobForm pipelines={pipelines} pipelinesError={pipelinesError} onSubmitted={() => setRefreshSignal((value) => value + 1)} />
      ) : (
        <p class="notice">This key may not submit jobs (it lacks the "jobs" scope).</p>
      )}
      <JobsList pipelines={pipelines} refreshSignal={refreshSignal} />
    </>
  );
}
