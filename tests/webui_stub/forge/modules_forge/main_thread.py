"""Stand-in for Forge's modules_forge/main_thread.py (main @ dfdcbab): tasks queued for the main thread's loop();
run_and_wait_result prints a task's exception and returns its result, None when it raised."""
import threading
import time
import traceback

lock = threading.Lock()
last_id = 0
waiting_list = []
finished_list = []


class Task:
    def __init__(self, task_id, func, args, kwargs):
        self.task_id = task_id
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.result = None
        self.exception = None

    def work(self):
        try:
            self.result = self.func(*self.args, **self.kwargs)
        except Exception as e:
            traceback.print_exc()
            self.exception = e


def loop():
    while True:
        time.sleep(0.01)
        if len(waiting_list) > 0:
            with lock:
                task = waiting_list.pop(0)
            task.work()
            with lock:
                finished_list.append(task)


def async_run(func, *args, **kwargs):
    global last_id
    with lock:
        last_id += 1
        new_task = Task(task_id=last_id, func=func, args=args, kwargs=kwargs)
        waiting_list.append(new_task)
    return new_task.task_id


def run_and_wait_result(func, *args, **kwargs):
    current_id = async_run(func, *args, **kwargs)
    while True:
        time.sleep(0.01)
        finished_task = None
        for t in finished_list.copy():
            if t.task_id == current_id:
                finished_task = t
                break
        if finished_task is not None:
            with lock:
                finished_list.remove(finished_task)
            return finished_task.result
