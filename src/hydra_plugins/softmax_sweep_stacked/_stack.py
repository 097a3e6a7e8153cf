"""A launch whose jobs meet where they train: each job runs in a thread of its own up to the point
where it hands a Request to the Stack and waits; the launcher then calls each group's train
function once for the requests of that group (same group key), up to `at_once` groups side by side
in threads of their own, and lets the jobs go on, one at a time. A job may fork: run parts of
itself as jobs of the launch (a trial's seeds), whose requests train with everyone's, and wait for
them. The app decides what a request holds and how a group trains; this module knows neither. A
train function learns how many groups train side by side (groups_training) to take its share of
the machine, and should end soon when the process is interrupted: the launch waits for it."""
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

_local = threading.local()


@dataclass
class Request:
    key: Any  # requests with equal keys train together
    train: Callable[[list["Request"]], None]  # trains a group of requests, setting each one's result
    payload: Any = None
    result: Any = None
    error: Optional[BaseException] = None


@dataclass
class Job:
    body: Callable[[], Any]
    # around each of the job's turns: e.g. put back the process-wide state its last turn left
    before_each_step: Callable[[], None] = lambda: None
    after_each_step: Callable[[], None] = lambda: None
    state: str = "new"  # new, running, parked (a request waits), forked (its children run), done
    request: Optional[Request] = None
    result: Any = None
    error: Optional[BaseException] = None  # what the body raised (Hydra's run_job keeps a job's Exception itself)
    thread: Optional[threading.Thread] = field(default=None, repr=False)
    # a job and the launcher hand its turn back and forth; an Event of each job's own, since with one
    # Condition for all every handoff woke every parked job (286 jobs: 1.5 s of handoffs, now 0.05)
    go: threading.Event = field(default_factory=threading.Event, repr=False)
    yielded: threading.Event = field(default_factory=threading.Event, repr=False)
    children: list["Job"] = field(default_factory=list, repr=False)
    parent: Optional["Job"] = field(default=None, repr=False)


class Stack:
    def __init__(self, at_once: int = 1) -> None:
        self._lock = threading.Lock()
        self.at_once = max(1, at_once)
        self._training = 0  # groups training side by side now

    def run(self, jobs: Sequence[Job]) -> list[Any]:
        """Run the jobs' bodies; returns what each returned. Every job goes on alone until it asks
        to train or ends; the requests then train together; the jobs go on; and so on."""
        self._jobs = list(jobs)  # and the children of forks, as they come
        try:
            for job in jobs:
                self._advance(job)
            while parked := [job for job in self._jobs if job.state == "parked"]:
                self._train(parked)
        except BaseException as error:  # Ctrl-C, SIGTERM: every job ends its run as interrupted
            while live := [job for job in self._jobs if job.state in ("running", "parked")]:
                for job in live:
                    if job.state == "parked":
                        job.request.error = error
                    self._advance(job)
            raise
        if failed := next((job.error for job in jobs if job.error is not None), None):
            raise failed
        return [job.result for job in jobs]

    def _train(self, parked: Sequence[Job]) -> None:
        """Train the parked jobs' requests, a group per key, and let each group's jobs go on as soon
        as it has trained, while the others still train (a job that asks again waits for the next
        round)."""
        by_key: dict[Any, list[Job]] = {}
        for job in parked:
            by_key.setdefault(job.request.key, []).append(job)
        groups = list(by_key.values())
        # a thread per group, ended with it, also for a group alone: a train function's threads may
        # hold resources for as long as they live (an OpenMP runtime counts them as busy), and the
        # launcher's thread lives on
        trained: queue.SimpleQueue[int] = queue.SimpleQueue()
        errors, threads = {}, {}

        def train(index: int, group: list[Request]) -> None:
            _local.stack_training = self
            with self._lock:
                self._training += 1
            try:
                group[0].train(group)
            except BaseException as e:  # noqa: BLE001 - raised in the launcher's thread once all have ended
                errors[index] = e
            finally:
                with self._lock:
                    self._training -= 1
                trained.put(index)

        waiting = list(range(len(groups)))

        def start_waiting() -> None:
            while waiting and len(threads) < self.at_once:
                index = waiting.pop(0)
                threads[index] = threading.Thread(target=train, name="stacked-group",
                                                  args=(index, [job.request for job in groups[index]]))
                threads[index].start()

        try:
            while waiting or threads:
                start_waiting()
                index = trained.get()
                threads.pop(index).join()
                start_waiting()  # the next group trains while this one's jobs go on (120 runs' ends: 7 s)
                if not errors:  # after a group's failure the others end, and every job with them
                    for job in groups[index]:
                        self._advance(job)
        finally:  # an interrupt here: the groups end as they do when interrupted (each at its next epoch)
            for thread in threads.values():
                thread.join()
        if errors:
            raise errors[min(errors)]  # the first group's error, as when they train one after another

    def _advance(self, job: Job) -> None:
        """Step the job; the children of its fork, if it forked; its parent, if it was the last
        of its fork to end."""
        self._step(job)
        if job.state == "forked":
            self._jobs.extend(job.children)
            for child in job.children:
                self._advance(child)
        elif job.state == "done" and job.parent is not None and job.parent.state == "forked" \
                and all(child.state == "done" for child in job.parent.children):
            self._advance(job.parent)

    def _step(self, job: Job) -> None:
        """Let the job run until it parks at its next request or ends."""
        job.before_each_step()
        job.state = "running"
        job.yielded.clear()
        if job.thread is None:
            job.thread = threading.Thread(target=self._body, args=(job,), name="stacked-job", daemon=True)
            job.thread.start()
        else:
            job.go.set()
        job.yielded.wait()
        job.after_each_step()

    def _body(self, job: Job) -> None:
        _local.job, _local.stack = job, self
        try:
            job.result = job.body()
        except BaseException as e:  # noqa: BLE001 - handed to the launcher's thread, raised there
            job.error = e
        finally:
            job.state = "done"
            job.yielded.set()

    @staticmethod
    def _yield(job: Job, state: str) -> None:
        """In a job's thread: hand the turn back to the launcher and wait for the next one."""
        job.state = state
        job.go.clear()
        job.yielded.set()
        job.go.wait()

    def request(self, request: Request) -> Any:
        """In a job's thread: wait for the request's result (what its group's train function set)."""
        job = _local.job
        job.request = request
        self._yield(job, "parked")
        if request.error is not None:
            raise request.error
        return request.result

    def fork(self, bodies: Sequence[Callable[[], Any]]) -> list[tuple[Any, Optional[BaseException]]]:
        """In a job's thread: run each body as a job of this launch (its requests train with the
        others'), wait until all have ended; each one's (result, error)."""
        job = _local.job
        if not bodies:
            return []
        children = [Job(body=body, before_each_step=job.before_each_step, after_each_step=job.after_each_step,
                        parent=job) for body in bodies]
        job.children = children
        self._yield(job, "forked")
        return [(child.result, child.error) for child in children]


def current() -> Optional[Stack]:
    """The Stack this thread's job belongs to, None outside a stacked launch."""
    return getattr(_local, "stack", None)


def groups_training() -> int:
    """In a group's train function: how many groups of its launch train side by side now, itself
    included (1 elsewhere)."""
    stack = getattr(_local, "stack_training", None)
    return stack._training if stack is not None else 1
