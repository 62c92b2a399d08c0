# The allocs workload (fixtures/run/allocs.rb's loop) for a fixed wall time, measuring how fast it
# runs once rounds are over: prints the objects made per CPU second of the process from 3 s on,
# and per CPU second of the loop's own thread (the rounds of benches/after_round.sh are at 1 s
# and 2 s). With TRACE_EVENTS set (e.g. "line
# call b_call c_return", the events the agent parks the program's threads with), a TracePoint on
# those events is enabled for 50 ms at 1 s and 2 s, as a round's parking does, without leakhunt.
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
started = clock
events = ENV.fetch('TRACE_EVENTS', '').split.map(&:to_sym)
unless events.empty?
  Thread.new do
    [1, 2].each do |at|
      sleep [at - (clock - started), 0].max
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
  mark ||= [n, cpu, loop_cpu] if at >= 3
  break if at >= seconds
end
# Per CPU second of the process (what the program pays, the agent's thread included), then per
# CPU second of the loop's own thread (how fast its code runs).
puts format('after_round: %d objects per CPU second from 3 s on (%d per CPU second of the loop thread)',
            (n - mark[0]) / (cpu - mark[1]), (n - mark[0]) / (loop_cpu - mark[2]))
