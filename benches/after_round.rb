# The allocs workload (fixtures/run/allocs.rb's loop) for a fixed wall time, measuring how fast it
# runs once rounds are over: prints the objects made per CPU second of the process from FROM s on
# (3 by default; the rounds of benches/after_round.sh are at 1 s and 2 s), and per CPU second of
# the loop's own thread. Without leakhunt, a second thread can do at 1 s and 2 s what a round
# would:
# - TRACE_EVENTS (e.g. "line call b_call c_return", the events the agent parks threads with):
#   a TracePoint on those events enabled for 50 ms, as a parked round does;
# - LSAN_CHECK=1 (liblsan preloaded): LeakSanitizer's recoverable leak check through Fiddle,
#   the GVL released, as the agent once called it. In plain ruby no heap page is a root region,
#   so each check reports most of Ruby's memory and runs for seconds: with FROM=6 and SECONDS=10
#   the checks are over before the measure (BENCHMARKS.md: the check leaves nothing slower).
#   ruby benches/after_round.rb [SECONDS=9]
class Item
  def initialize(n)
    @name = "item #{n}"
    @tags = [n, n + 1]
  end
end

def clock
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def cpu
  Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
end

def loop_cpu
  Process.clock_gettime(Process::CLOCK_THREAD_CPUTIME_ID)
end

seconds = Float(ARGV[0] || 9)
from = Float(ENV.fetch('FROM', '3'))
started = clock
events = ENV.fetch('TRACE_EVENTS', '').split.map(&:to_sym)
check = nil
if ENV['LSAN_CHECK'] == '1'
  require 'fiddle'
  check = Fiddle::Function.new(Fiddle::Handle::DEFAULT['__lsan_do_recoverable_leak_check'], [], Fiddle::TYPE_INT)
end
unless events.empty? && check.nil?
  Thread.new do
    [1, 2].each do |at|
      sleep [at - (clock - started), 0].max
      if check
        t0 = clock
        check.call
        warn format('after_round: leak check at %.2f s took %.2f s', t0 - started, clock - t0)
      end
      next if events.empty?

      trace = TracePoint.new(*events) {}
      trace.enable
      sleep 0.05
      trace.disable
    end
  end
end

kept = []
n = 0
mark = nil
loop do
  item = Item.new(n)
  kept << item if (n % 100).zero?
  n += 1
  next unless (n % 10_000).zero?

  at = clock - started
  mark ||= [n, cpu, loop_cpu] if at >= from
  break if at >= seconds
end
# Per CPU second of the process (what the program pays, the agent's thread included), then per
# CPU second of the loop's own thread (how fast its code runs).
puts format('after_round: %d objects per CPU second from %g s on (%d per CPU second of the loop thread)',
            (n - mark[0]) / (cpu - mark[1]), from, (n - mark[0]) / (loop_cpu - mark[2]))
