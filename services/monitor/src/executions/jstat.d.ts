// jstat ships no types (and there is no @types/jstat): the few functions used here.
declare module 'jstat' {
  interface JStat {
    mean(values: number[]): number;
    variance(values: number[], sample?: boolean): number;
    stdev(values: number[], sample?: boolean): number;
    normal: { cdf(x: number, mean: number, std: number): number };
    studentt: { cdf(x: number, freedom: number): number; inv(p: number, freedom: number): number };
  }
  const jstat: { jStat: JStat };
  export default jstat;
}
