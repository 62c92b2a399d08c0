# Does LeakSanitizer's recoverable leak check slow the program after it returns? (BENCHMARKS.md,
# "A program's steady state": an earlier version of that section said so, from a process-CPU
# measure that counted the check's own thread.) The allocs loop runs for 10 s; with CHECK=1 a
# second thread calls __lsan_do_recoverable_leak_check through Fiddle at 1 s and 2 s (the GVL is
# released, as the agent did). Prints objects per CPU second from 3 s to 6 s and from 6 s to 10 s,
# per process CPU and per the loop thread's own CPU, and each check's wall and CPU time on stderr.
#   L=$(ls /usr/lib/*/liblsan.so.0 | head -1)
#   for c in 0 1 0 1; do LD_PRELOAD=$L CHECK=$c \
#     LSAN_OPTIONS=fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1:log_path=/tmp/lsan-check \
#     ruby benches/lsan_check.rb; done
# Not a test: nothing is asserted.
require 'fiddle'

class Item
  def initialize(n)
    @name = "item #{n}"
    @tags = [n, n + 1]
  end
end

def process_cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
def thread_cpu = Process.clock_gettime(Process::CLOCK_THREAD_CPUTIME_ID)
def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

check = Fiddle::Function.new(Fiddle::Handle::DEFAULT['__lsan_do_recoverable_leak_check'], [], Fiddle::TYPE_INT)
started = clock
checks_over = nil
Thread.new do
  [1, 2].each do |at|
    sleep [at - (clock - started), 0].max
    next unless ENV['CHECK'] == '1'

    t0 = clock
    c0 = thread_cpu
    check.call
    warn format('  check at %.2f s: %.2f s wall, %.2f s CPU', t0 - started, clock - t0, thread_cpu - c0)
  end
  checks_over = clock - started
end

kept = []
n = 0
marks = {}
loop do
  item = Item.new(n)
  kept << item if (n % 100).zero?
  n += 1
  next unless (n % 10_000).zero?

  at = clock - started
  [3, 6].each { |m| marks[m] ||= [n, process_cpu, thread_cpu] if at >= m }
  break if at >= 10
end
last = [n, process_cpu, thread_cpu]
rate = lambda do |from, to|
  format('%.2f M per process CPU s, %.2f M per loop-thread CPU s',
         (to[0] - from[0]) / (to[1] - from[1]) / 1e6, (to[0] - from[0]) / (to[2] - from[2]) / 1e6)
end
puts format('CHECK=%s: 3-6 s %s; 6-10 s %s; checks over at %.2f s',
            ENV.fetch('CHECK', '0'), rate.call(marks[3], marks[6]), rate.call(marks[6], last), checks_over || 0)
