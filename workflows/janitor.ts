import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createJanitorActivities } from '../activities/janitor.js';
import type { DoctorSummary } from '../src/movement/doctor.js';
import { validInput } from './validate.js';
import { janitorInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createJanitorActivities>;

// Checking every node takes seconds; a node that does not answer is reported, not waited for.
const CHECK = {
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 3 },
} as const;

const { checkLeftovers } = proxyActivities<Activities>(CHECK);

export interface JanitorInput {
  /** Clean the leftovers of closed movements (else only count them). */
  fix: boolean;
}

/** One run of the janitor (schedule shardcast-janitor): what movements left behind, found and, if asked, cleaned. */
export async function janitor(input: JanitorInput): Promise<DoctorSummary> {
  validInput(janitorInputSchema, input);
  setCurrentDetails(input.fix ? 'finding and cleaning movement leftovers' : 'counting movement leftovers');
  const summary = await checkLeftovers.executeWithOptions({ ...CHECK, summary: input.fix ? 'doctor --fix' : 'doctor' }, [input]);
  const left = Object.entries(summary.leftovers).filter(([, n]) => n > 0);
  setCurrentDetails(`fixed ${summary.fixed}, failed ${summary.failed}; left: ${left.length ? left.map(([k, n]) => `${n} ${k}`).join(', ') : 'nothing'}`);
  return summary;
}
