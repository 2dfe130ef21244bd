set terminal pngcairo size 1400,560 font ",10"
set output "bench/results/compare.png"
set multiplot layout 1,2 title "Annals vs peers, one run on 2 cores (median of 3)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set key top left
set ylabel "events/s"
set logscale y
set yrange [100:*]
set xtics rotate by -20
set title "throughput by workload"
plot for [i=2:6] "bench/results/compare.dat" using i:xtic(1) title columnheader(i)
unset logscale y
set yrange [0:*]
set ylabel "ms"
set title "append latency (p50, p99)"
set xtics rotate by -45 font ",8"
plot "bench/results/compare-lat.dat" using 2:xtic(1) title "p50", '' using 3 title "p99"
unset multiplot
