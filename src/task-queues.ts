/** The control task queue: every workflow and activity runs there unless `temporal.taskQueue` says otherwise. Apart from workers/ so that a client need not load the worker. */
export const CONTROL_TASK_QUEUE = 'shardcast-control';
